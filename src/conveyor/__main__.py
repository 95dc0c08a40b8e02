"""python -m conveyor"""

from .cli import main

main()
