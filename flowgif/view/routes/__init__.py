"""The view's routes, one module per thing served: ``pictures`` (a dropped, typed or drawn
picture's flow and what is inside it), ``runs`` (the run folders, each beside its exact flow),
``saves`` (Save GIF/MP4 and downloads); ``base`` holds what they share."""
