"""Services: every write of the platform. Keyword-only, typed, atomic."""
