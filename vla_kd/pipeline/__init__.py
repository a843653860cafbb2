"""The main job, ``vla-kd pipeline``: demonstrations, the teacher and the action expert trained
on them, the students distilled from the teacher, all evaluated on held-out seeds."""
