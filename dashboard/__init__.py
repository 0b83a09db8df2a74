"""The analysts' Plotly Dash app: forecasts, accuracy, drift, latency and rollouts."""
