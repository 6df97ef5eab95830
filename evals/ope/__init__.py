"""Off-policy evaluation: estimators over logged bandit feedback, the OBD task, `tagloop eval ope`."""
