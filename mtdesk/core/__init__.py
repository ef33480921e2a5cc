"""Settings, normalized wire types, errors, Redis keys and the clock. Imports nothing of ours."""
