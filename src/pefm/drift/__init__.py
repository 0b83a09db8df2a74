"""Drift monitoring: input drift (Evidently), prediction drift, realized accuracy, the policy that
turns them into retraining, and the retraining job."""
