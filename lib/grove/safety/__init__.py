"""Grove's promise, in one place: nothing an agent or the user made is lost.

The ownership journal (what Grove created, recorded before it is created) and the saving of what a
removal would lose (backup refs, salvage refs). Every destructive path calls here first.
May import only ``grove.core``.
"""
