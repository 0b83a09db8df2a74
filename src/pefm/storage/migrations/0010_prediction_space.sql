-- Forecasts are served in the series' own units (level) or in model space (issue 15): the
-- prediction log says which ('level' or 'model'), so readers never mix the two. Rows logged
-- before are model space. A constant default is allowed on a compressed TimescaleDB hypertable;
-- a CHECK constraint is not (before TimescaleDB 2.20), so the writer alone keeps the values.
ALTER TABLE predictions ADD COLUMN space text NOT NULL DEFAULT 'model';
