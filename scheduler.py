"""The background process: ``python scheduler.py``. See consent/scheduling.py."""

from consent.scheduling import main

if __name__ == "__main__":
    main()
