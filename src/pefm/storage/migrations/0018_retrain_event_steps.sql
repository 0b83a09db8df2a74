-- The retraining log is read by step and time: the cool-down (the latest 'trained' or 'requested'),
-- the pending request and the runs started or standing aside since it. On a cluster it grows by
-- every scheduled run that starts or stands aside, for good.

CREATE INDEX retrain_events_step_ts ON retrain_events (step, ts);
