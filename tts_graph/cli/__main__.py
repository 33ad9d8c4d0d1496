"""``python -m tts_graph.cli``, as the single-file CLI allowed."""

from . import main

main()
