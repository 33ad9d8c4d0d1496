try:
    from .cli import main
except KeyboardInterrupt:  # Ctrl-C at the very start: one line, as anywhere later
    import sys

    print("tts-graph: interrupted", file=sys.stderr)
    sys.exit(130)

main()
