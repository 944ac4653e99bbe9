"""One module per editing method; each reads like its paper's algorithm box."""
