"""`python -m deployer.cli` = the `deployer` command (for environments without the console script)."""

from deployer.cli import main

main()
