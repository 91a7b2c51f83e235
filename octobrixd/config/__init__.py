"""The config file: its models and values, edits that keep comments, line positions, the applied copy."""
