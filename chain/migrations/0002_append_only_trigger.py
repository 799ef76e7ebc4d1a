"""Blocks and transactions are append-only, in the hub's schema and every replica.

django-tenants runs this migration once per schema with that schema first on
the search_path, so the function and triggers are created in each schema.
``repair_replica`` disables the triggers inside its own database transaction
(``ALTER TABLE ... DISABLE TRIGGER`` needs the table owner) to re-copy a
broken replica; nothing else may change a block.
"""

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION chain_refuse_change() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'the ledger is append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'integrity_constraint_violation';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER chain_block_append_only
    BEFORE UPDATE OR DELETE ON chain_block
    FOR EACH ROW EXECUTE FUNCTION chain_refuse_change();
CREATE TRIGGER chain_block_no_truncate
    BEFORE TRUNCATE ON chain_block
    FOR EACH STATEMENT EXECUTE FUNCTION chain_refuse_change();
CREATE TRIGGER chain_transaction_append_only
    BEFORE UPDATE OR DELETE ON chain_transaction
    FOR EACH ROW EXECUTE FUNCTION chain_refuse_change();
CREATE TRIGGER chain_transaction_no_truncate
    BEFORE TRUNCATE ON chain_transaction
    FOR EACH STATEMENT EXECUTE FUNCTION chain_refuse_change();
"""

DROP = """
DROP TRIGGER IF EXISTS chain_block_append_only ON chain_block;
DROP TRIGGER IF EXISTS chain_block_no_truncate ON chain_block;
DROP TRIGGER IF EXISTS chain_transaction_append_only ON chain_transaction;
DROP TRIGGER IF EXISTS chain_transaction_no_truncate ON chain_transaction;
DROP FUNCTION IF EXISTS chain_refuse_change();
"""


class Migration(migrations.Migration):
    dependencies = [("chain", "0001_initial")]

    operations = [migrations.RunSQL(CREATE, DROP)]
