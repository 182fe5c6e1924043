-- 0013: every table writes the part an insert makes as one file ("packed" part storage);
-- parts made by background merges are written as before. `{db}` is replaced by the migration
-- runner, which records every completed statement (a failed file resumes there).
--
-- Why: each sink insert makes a new part in ten tables (the raw events and requests, and the
-- rollups their views feed), and a part on disk is a directory of 10 to 60 files (a data and a
-- marks file per column, checksums, counts, the partition and min/max index). An insert of 100k
-- event records created about 500 files, and background merges delete as many. Measured on this
-- box, the inserting thread spent more CPU in the kernel creating files (ext4 looks for free
-- inodes past the ones deleted moments before) than in the engine's own code. A packed part is
-- one file, so an insert creates about 15.
--
-- Measured on bench/analytics.py's records (1M requests over 0.7 days, the density of its 10M
-- run), the sink's path with every view on, runs alternating: 242k and 240k rows/s (149k and
-- 147k rows per CPU-second) against 230k, 231k and 230k (141k to 145k) for the same code without
-- this file.
--
-- Merged parts (level 1 and above) keep the full layout, so the parts queries read for most of
-- the data are unchanged; a new part lives packed until its first merge, seconds to minutes.
-- The setting changes how new parts are written only: existing parts stay as they are.
--
-- Servers: packed part storage is in open-source ClickHouse from its mid-2026 releases (the
-- embedded engine has it); before that ClickHouse documented the setting for its Cloud service
-- only, so an older release may refuse this file (unknown setting) or take it and keep writing
-- full parts. Not tried here on an older server. A server that has written packed parts cannot
-- be downgraded below that release: older releases cannot read them.

ALTER TABLE {db}.events MODIFY SETTING min_level_for_full_part_storage = 1;
ALTER TABLE {db}.requests MODIFY SETTING min_level_for_full_part_storage = 1;
ALTER TABLE {db}.feedback MODIFY SETTING min_level_for_full_part_storage = 1;
ALTER TABLE {db}.deadletters MODIFY SETTING min_level_for_full_part_storage = 1;
ALTER TABLE {db}.request_routes MODIFY SETTING min_level_for_full_part_storage = 1;
ALTER TABLE {db}.stage_minute MODIFY SETTING min_level_for_full_part_storage = 1;
ALTER TABLE {db}.stage_hour MODIFY SETTING min_level_for_full_part_storage = 1;
ALTER TABLE {db}.request_minute MODIFY SETTING min_level_for_full_part_storage = 1;
ALTER TABLE {db}.request_hour MODIFY SETTING min_level_for_full_part_storage = 1;
ALTER TABLE {db}.deployment_minute MODIFY SETTING min_level_for_full_part_storage = 1;
ALTER TABLE {db}.deployment_hour MODIFY SETTING min_level_for_full_part_storage = 1;
ALTER TABLE {db}.answers_hour MODIFY SETTING min_level_for_full_part_storage = 1;
ALTER TABLE {db}.feedback_minute MODIFY SETTING min_level_for_full_part_storage = 1;
ALTER TABLE {db}.feedback_hour MODIFY SETTING min_level_for_full_part_storage = 1;
ALTER TABLE {db}.feedback_latest MODIFY SETTING min_level_for_full_part_storage = 1;
ALTER TABLE {db}.feedback_route_minute MODIFY SETTING min_level_for_full_part_storage = 1;
