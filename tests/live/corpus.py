"""Small hand-written data sets for the live scenarios (no downloads)."""

from __future__ import annotations

import struct
import zlib

SENTIMENT_LABELS = ("Positive", "Negative", "Neutral")

SENTIMENT_CONFIG = """<View>
  <Text name="text" value="$text"/>
  <Choices name="sentiment" toName="text" choice="single" showInline="true">
    <Choice value="Positive"/>
    <Choice value="Negative"/>
    <Choice value="Neutral"/>
  </Choices>
</View>"""

# (text, label). Ten of each class; the cue words repeat on purpose so that a linear model trained on
# two thirds of them has something to learn.
SENTIMENT_TEXTS: list[tuple[str, str]] = [
    ("I love this phone, it is great and fast.", "Positive"),
    ("Great service, friendly staff, I love it.", "Positive"),
    ("What a wonderful and great day at the beach.", "Positive"),
    ("The food was excellent and I loved the dessert.", "Positive"),
    ("Fantastic movie, great acting, I loved every minute.", "Positive"),
    ("Excellent quality, I am very happy with it.", "Positive"),
    ("The hotel was wonderful and the staff were great.", "Positive"),
    ("I am so happy, this gift is excellent.", "Positive"),
    ("Great value, works perfectly, love it.", "Positive"),
    ("A wonderful book, I am happy I read it.", "Positive"),
    ("I hate this phone, it is terrible and slow.", "Negative"),
    ("Awful service, rude staff, I hate it.", "Negative"),
    ("What a terrible and awful day, everything broke.", "Negative"),
    ("The food was disgusting and the soup was cold.", "Negative"),
    ("Terrible movie, awful acting, a waste of time.", "Negative"),
    ("Poor quality, I am very angry and disappointed.", "Negative"),
    ("The hotel was dirty and the staff were rude.", "Negative"),
    ("I am so disappointed, this gift is awful.", "Negative"),
    ("Broken on arrival, terrible, I hate it.", "Negative"),
    ("An awful book, a waste of money.", "Negative"),
    ("The meeting is scheduled for Tuesday at ten.", "Neutral"),
    ("The train leaves from platform four.", "Neutral"),
    ("The package contains two cables and a manual.", "Neutral"),
    ("The store opens at nine on weekdays.", "Neutral"),
    ("The report has twelve pages and three tables.", "Neutral"),
    ("The bus stops at the station every hour.", "Neutral"),
    ("The office is on the second floor.", "Neutral"),
    ("The form asks for a name and an address.", "Neutral"),
    ("The library closes at six on Saturday.", "Neutral"),
    ("The box is blue and measures thirty centimetres.", "Neutral"),
]


def sentiment_result(label: str) -> list[dict]:
    return [{"from_name": "sentiment", "to_name": "text", "type": "choices", "value": {"choices": [label]}}]


def sentiment_split(n_annotated_per_class: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Interleave the classes so that the first k items of the result cover all labels evenly."""
    by_label = {lab: [t for t in SENTIMENT_TEXTS if t[1] == lab] for lab in SENTIMENT_LABELS}
    train, rest = [], []
    for i in range(10):
        for lab in SENTIMENT_LABELS:
            (train if i < n_annotated_per_class else rest).append(by_label[lab][i])
    return train, rest


NER_LABELS = ("PER", "ORG", "LOC")

NER_CONFIG = """<View>
  <Labels name="ner" toName="text">
    <Label value="PER"/>
    <Label value="ORG"/>
    <Label value="LOC"/>
  </Labels>
  <Text name="text" value="$text"/>
</View>"""

# (sentence, [(entity, label), ...]); each entity occurs once in its sentence.
NER_SENTENCES: list[tuple[str, list[tuple[str, str]]]] = [
    ("Alice Martin works for Acme Corp in Paris.", [("Alice Martin", "PER"), ("Acme Corp", "ORG"), ("Paris", "LOC")]),
    ("Bob Stone joined Globex in Berlin last year.", [("Bob Stone", "PER"), ("Globex", "ORG"), ("Berlin", "LOC")]),
    ("Carol King moved from London to Madrid.", [("Carol King", "PER"), ("London", "LOC"), ("Madrid", "LOC")]),
    ("Initech opened an office in Tokyo.", [("Initech", "ORG"), ("Tokyo", "LOC")]),
    ("David Lee met Alice Martin in Rome.", [("David Lee", "PER"), ("Alice Martin", "PER"), ("Rome", "LOC")]),
    ("Acme Corp hired Eva Green as director.", [("Acme Corp", "ORG"), ("Eva Green", "PER")]),
    ("Globex and Initech signed a deal in Paris.", [("Globex", "ORG"), ("Initech", "ORG"), ("Paris", "LOC")]),
    ("Frank Moore lives in Berlin.", [("Frank Moore", "PER"), ("Berlin", "LOC")]),
    ("Eva Green visited Tokyo with Bob Stone.", [("Eva Green", "PER"), ("Tokyo", "LOC"), ("Bob Stone", "PER")]),
    ("Umbrella Inc is based in London.", [("Umbrella Inc", "ORG"), ("London", "LOC")]),
    ("Carol King works at Umbrella Inc.", [("Carol King", "PER"), ("Umbrella Inc", "ORG")]),
    ("David Lee flew from Madrid to Rome.", [("David Lee", "PER"), ("Madrid", "LOC"), ("Rome", "LOC")]),
    ("Frank Moore left Globex for Acme Corp.", [("Frank Moore", "PER"), ("Globex", "ORG"), ("Acme Corp", "ORG")]),
    ("Initech moved its staff to Berlin.", [("Initech", "ORG"), ("Berlin", "LOC")]),
    (
        "Alice Martin and Eva Green founded Umbrella Inc.",
        [("Alice Martin", "PER"), ("Eva Green", "PER"), ("Umbrella Inc", "ORG")],
    ),
    ("Bob Stone spoke in Paris about Initech.", [("Bob Stone", "PER"), ("Paris", "LOC"), ("Initech", "ORG")]),
    ("Carol King met Frank Moore in Tokyo.", [("Carol King", "PER"), ("Frank Moore", "PER"), ("Tokyo", "LOC")]),
    ("Globex opened a lab in Madrid.", [("Globex", "ORG"), ("Madrid", "LOC")]),
    ("David Lee works for Initech in London.", [("David Lee", "PER"), ("Initech", "ORG"), ("London", "LOC")]),
    ("Eva Green flew to Rome for Acme Corp.", [("Eva Green", "PER"), ("Rome", "LOC"), ("Acme Corp", "ORG")]),
]


def ner_result(text: str, entities: list[tuple[str, str]]) -> list[dict]:
    out = []
    for entity, label in entities:
        start = text.index(entity)
        out.append(
            {
                "from_name": "ner",
                "to_name": "text",
                "type": "labels",
                "value": {"start": start, "end": start + len(entity), "text": entity, "labels": [label]},
            }
        )
    return out


IMAGE_LABELS = ("Red", "Blue")

IMAGE_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <Choices name="colour" toName="image" choice="single">
    <Choice value="Red"/>
    <Choice value="Blue"/>
  </Choices>
</View>"""


def png_bytes(width: int, height: int, rgb: tuple[int, int, int], noise_seed: int = 0) -> bytes:
    """A small RGB PNG written with zlib only; ``noise_seed`` varies the pixels a little."""
    rows = []
    state = noise_seed * 2654435761 % 2**32 or 1
    for _ in range(height):
        row = bytearray([0])
        for _ in range(width):
            state = (1103515245 * state + 12345) % 2**31
            jitter = state % 31 - 15
            row += bytes(max(0, min(255, c + jitter)) for c in rgb)
        rows.append(bytes(row))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"".join(rows)))
        + chunk(b"IEND", b"")
    )


TAXONOMY_CONFIG = """<View>
  <Text name="text" value="$text"/>
  <Taxonomy name="topic" toName="text">
    <Choice value="Opinion">
      <Choice value="Praise"/>
      <Choice value="Complaint"/>
    </Choice>
    <Choice value="Fact"/>
  </Taxonomy>
</View>"""

# the sentiment labels as taxonomy paths
TAXONOMY_PATHS = {"Positive": ["Opinion", "Praise"], "Negative": ["Opinion", "Complaint"], "Neutral": ["Fact"]}


def taxonomy_result(path: list[str]) -> list[dict]:
    return [{"from_name": "topic", "to_name": "text", "type": "taxonomy", "value": {"taxonomy": [path]}}]


MIXED_CONFIG = """<View>
  <Text name="text" value="$text"/>
  <Choices name="sentiment" toName="text" choice="single">
    <Choice value="Positive"/>
    <Choice value="Negative"/>
    <Choice value="Neutral"/>
  </Choices>
  <Labels name="ner" toName="text">
    <Label value="PER"/>
    <Label value="ORG"/>
    <Label value="LOC"/>
  </Labels>
</View>"""
