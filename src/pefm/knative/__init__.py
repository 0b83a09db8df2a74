"""Knative Serving: manifest validation and the Service shape PEFM deploys."""
