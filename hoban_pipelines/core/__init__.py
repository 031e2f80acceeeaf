"""What every stage stands on: the lake, the settings, folder fingerprints, the YOLO dataset format, pictures."""
