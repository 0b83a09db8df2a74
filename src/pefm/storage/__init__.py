"""Storage: the PostgreSQL/TimescaleDB database, its migrations, one module per table family."""
