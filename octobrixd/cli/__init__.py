"""octobrixctl: `octobrixctl VERB` is cli/VERB.py (import_.py for import); main.py parses and dispatches."""
