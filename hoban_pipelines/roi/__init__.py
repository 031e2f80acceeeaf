"""Labelled videos become a classification dataset of ROI crops.

``videos`` reads and checks the JSON spec beside each video (ROIs, label map, segments);
``crops`` streams each video once and samples crops per ROI under the team's rules
(motion, cooldown, near-duplicates, label quotas), then splits simulation/real into train/test.
"""
