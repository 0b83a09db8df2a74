-- Forecasts are served in the series' own units (level) or in model space (issue 15): the
-- prediction log says which, so readers never mix the two. Rows logged before are model space.
-- A constant default is allowed on a compressed TimescaleDB hypertable, as on a plain table.
ALTER TABLE predictions ADD COLUMN space text NOT NULL DEFAULT 'model' CHECK (space IN ('level', 'model'));
