# The one upward import of the base layer: `python -m sirocco` runs the CLI
# entry point (cli/, a composition root that nothing else imports).
from cli.main import main

if __name__ == "__main__":
    main()
