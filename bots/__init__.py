"""The process: configuration, the runner, the command line.

Importing it keeps optional features of our dependencies that chatbridge never uses out of
the process (:mod:`chatbridge.bots.extras`): before anything here imports python-telegram-bot
or httpx.
"""

from chatbridge.bots.extras import skip_unused_extras

skip_unused_extras()
