"""One catalogue per locale: every sentence the bots themselves say (answers are the backend's).

Each module holds ``TEXTS``, a key -> text mapping; ``en`` is the reference every other locale
must match key for key (tests/test_texts.py checks it, and that placeholders agree).
"""
