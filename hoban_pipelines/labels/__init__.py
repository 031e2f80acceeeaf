"""CVAT parts become one labelled set: the import, label maps, the cleaning of pre-annotation false boxes."""
