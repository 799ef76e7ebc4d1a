"""The access log and its anchors are append-only, in every hospital's schema.

django-tenants runs this migration once per tenant schema with that schema first
on the search_path, so the function and triggers are created in each schema.
Nothing in the application changes or removes an entry; an operator who must
(a court order, say) disables the triggers as the table owner, and
``verify_access_log`` then reports the change.
"""

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION consent_refuse_change() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'the access log is append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'integrity_constraint_violation';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER consent_accesslogentry_append_only
    BEFORE UPDATE OR DELETE ON consent_accesslogentry
    FOR EACH ROW EXECUTE FUNCTION consent_refuse_change();
CREATE TRIGGER consent_accesslogentry_no_truncate
    BEFORE TRUNCATE ON consent_accesslogentry
    FOR EACH STATEMENT EXECUTE FUNCTION consent_refuse_change();
CREATE TRIGGER consent_accessloganchor_append_only
    BEFORE UPDATE OR DELETE ON consent_accessloganchor
    FOR EACH ROW EXECUTE FUNCTION consent_refuse_change();
CREATE TRIGGER consent_accessloganchor_no_truncate
    BEFORE TRUNCATE ON consent_accessloganchor
    FOR EACH STATEMENT EXECUTE FUNCTION consent_refuse_change();
"""

DROP = """
DROP TRIGGER IF EXISTS consent_accesslogentry_append_only ON consent_accesslogentry;
DROP TRIGGER IF EXISTS consent_accesslogentry_no_truncate ON consent_accesslogentry;
DROP TRIGGER IF EXISTS consent_accessloganchor_append_only ON consent_accessloganchor;
DROP TRIGGER IF EXISTS consent_accessloganchor_no_truncate ON consent_accessloganchor;
DROP FUNCTION IF EXISTS consent_refuse_change();
"""


class Migration(migrations.Migration):
    dependencies = [("consent", "0001_initial")]

    operations = [migrations.RunSQL(CREATE, DROP)]
