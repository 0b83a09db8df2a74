-- wrk script: POST a one-series forecast request (h=8)
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"series_id": "realgdp", "horizon": 8}'
