"""The web UI: its page shell, hand-written ES modules and styles, held in memory and
served under a version of their own (``/ui/static/<version>/``) by ``api/ui.py``."""
