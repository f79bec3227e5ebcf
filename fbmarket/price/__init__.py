"""Price suggestion for sellers: quantile models of log price with a calibrated 80% range.

features.py (what the models read), model.py (LightGBM boosters, save/load), conformal.py
(CQR calibration), metrics.py (figures), train.py (the `fbmarket train` stage).
"""
