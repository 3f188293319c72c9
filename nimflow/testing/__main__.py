"""``python -m nimflow.testing``: run the fake OpenAI-compatible server in the foreground."""

from ._options import main

if __name__ == "__main__":
    main()
