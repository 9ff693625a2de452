-- run once by the postgres image on a new volume (deploy/compose.yaml): Label Studio's own database
CREATE DATABASE labelstudio OWNER labelpilot;
