"""`octobrixctl export`: the farm as the file a farm manager (FDM Monster, OctoFarm) imports."""
