"""Figure builders and small layout pieces shared by the pages."""
