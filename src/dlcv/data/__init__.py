"""Reading the user's folders: images, land-cover masks and their colour codec, and transforms."""
