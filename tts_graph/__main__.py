try:
    from .cli import main
except KeyboardInterrupt:  # Ctrl-C at the very start: one line, as anywhere later
    import os
    import sys

    print("tts-graph: interrupted", file=sys.stderr, flush=True)
    os._exit(130)  # why not sys.exit: tts_graph.cli._quit_interrupted

main()
