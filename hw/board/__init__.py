"""Files that run on the board, copied into deploy/ by hw.deploy; a package only so that they install."""
