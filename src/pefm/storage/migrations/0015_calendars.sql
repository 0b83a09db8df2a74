-- Exchange calendars (pefm.data.calendars): a business-daily series may name the calendar of the
-- exchange it trades on (exchange_calendars' name: a MIC such as XNYS, or an alias). Its values
-- must then fall on sessions, and its forecasts are dated by sessions. '' (the default): any
-- weekday is a business day. The name is checked against the library by whoever writes it (the
-- ingest function, the loaders): the library's list grows with its releases.
ALTER TABLE series ADD COLUMN calendar text NOT NULL DEFAULT '' CHECK (length(calendar) <= 32);
ALTER TABLE series ADD CONSTRAINT series_calendar_business_daily CHECK (calendar = '' OR frequency = 'B');
