"""Blue-green rollouts by traffic splitting: spec, analysis, routers, metrics providers, controller."""
