-- Brings a messages table made before chat history (chat-auth 0.x, or the superuser
-- subscriber's) up to what history reads: the payload as delivered, ids compared byte for
-- byte (as topics are), and the two indexes that make each page an index range scan. Run it
-- once, at a quiet time: changing the ids' collation copies the table (the writer's INSERTs
-- wait for it; the spool holds the messages meanwhile).
--
--   mysql chat < mosquitto-conf/history-upgrade.sql
--
-- With another auth_opt_persist_table, put its name in place of `messages` below. Run it on a
-- table that has none of these yet (MySQL 8 has no ADD COLUMN IF NOT EXISTS): a table that
-- already has some of them needs only the remaining lines.
--
-- Without it chat-auth still works: rows are written without the payload and history
-- answers rebuild each message from its columns, scanning more rows per page.
ALTER TABLE messages
    MODIFY from_id VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    MODIFY to_id VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    ADD COLUMN payload MEDIUMTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
    ADD KEY messages_history_to (type, to_id),
    ADD KEY messages_history_pair (from_id, type, to_id);
