"""The command-line interface (``changescope``). The core library never imports this package."""
