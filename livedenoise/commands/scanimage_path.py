"""`livedenoise scanimage-path`: the folder holding the ScanImage user functions."""

from __future__ import annotations


from livedenoise.stream.scanimage import USER_FUNCTIONS, matlab_path


def register(sub) -> None:
    p = sub.add_parser(
        "scanimage-path",
        help="print the folder to add to the MATLAB path (ScanImage user functions)",
        description=(
            "Print the folder that holds the livedenoise ScanImage user functions "
            "(livedenoise_frameAcquired.m and friends). In MATLAB: addpath('<folder>'); "
            "then register the functions in ScanImage's User Functions dialog "
            "(docs/scanimage.md)."
        ),
    )
    p.add_argument("--matlab", action="store_true",
                   help="print a MATLAB addpath(...) command instead of the bare folder")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="also list which user function to register for which ScanImage event")
    p.set_defaults(func=run)


def run(args) -> int:
    folder = str(matlab_path())
    if args.matlab:
        print("addpath('" + folder.replace("'", "''") + "');")
    else:
        print(folder)
    if args.verbose:
        print("register in ScanImage > Settings > User Functions (Arguments optional, e.g. {'tcp://127.0.0.1:5570'}):")
        for event, fn in USER_FUNCTIONS.items():
            print(f"  {event:<14} {fn}")
        print("check the set-up in MATLAB before starting ScanImage: livedenoise_setup")
    return 0
