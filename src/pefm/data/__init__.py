"""Data: frequencies, validation, parsers and the bundled real datasets."""
