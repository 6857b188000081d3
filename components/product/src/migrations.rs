//! The component's tables, indexes and demo catalogue, applied by
//! `bv_service::migrate` (statements separated by `;` at a line end).

use bv_service::Migration;

/// In order; never edit one that has shipped, add another.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        name: "0001_products",
        sql: PRODUCTS,
    },
    Migration {
        name: "0002_demo_catalog",
        sql: DEMO_CATALOG,
    },
];

/// Products live in a schema of their own so that the services sharing
/// the platform database cannot collide on table names.
///
/// - `seq` orders the listing (cursors carry it); `version` is the ETag and
///   the events' `revision`.
/// - Deleting only sets `deleted_at`: the row stays for the history and
///   for consumers that still refer to it. Every index is partial on live
///   rows, so deleted ones cost the queries nothing, and a deleted
///   product's SKU may be used again.
/// - `search` is the full-text document of name and description; the
///   `english` configuration stems (`mugs` finds `mug`). Its GIN index
///   takes new rows at once (`fastupdate = off`): the catalogue is read far
///   more than written, and a long pending list would make searches slow
///   (and the planner shun the index) until the next vacuum.
const PRODUCTS: &str = r#"
CREATE SCHEMA IF NOT EXISTS product;
CREATE TABLE product.products (
    id           uuid        PRIMARY KEY,
    seq          bigint      GENERATED ALWAYS AS IDENTITY,
    sku          text        NOT NULL,
    name         text        NOT NULL,
    description  text        NOT NULL DEFAULT '',
    category     text        NOT NULL,
    price_amount bigint      NOT NULL CHECK (price_amount >= 0),
    currency     text        NOT NULL,
    version      bigint      NOT NULL DEFAULT 1,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    deleted_at   timestamptz,
    search       tsvector    GENERATED ALWAYS AS (to_tsvector('english', name || ' ' || description)) STORED
);
CREATE UNIQUE INDEX products_sku ON product.products (sku) WHERE deleted_at IS NULL;
CREATE INDEX products_page ON product.products (seq) WHERE deleted_at IS NULL;
CREATE INDEX products_category ON product.products (category, seq) WHERE deleted_at IS NULL;
CREATE INDEX products_price ON product.products (currency, price_amount) WHERE deleted_at IS NULL;
CREATE INDEX products_search ON product.products USING gin (search) WITH (fastupdate = off) WHERE deleted_at IS NULL
"#;

/// A small catalogue in three categories, so that a fresh `bv up` has
/// something to show, with the `product.created` event of each product in
/// the outbox (written in the same transaction, as the API would), so
/// that inventory and other consumers learn about them like about any
/// other product. Fixed ids: the demo products are the same everywhere.
/// The events are built in SQL here; the integration tests check them
/// against the event schema.
const DEMO_CATALOG: &str = r#"
INSERT INTO product.products (id, sku, name, description, category, price_amount, currency) VALUES
    ('5eed0000-0000-4000-8000-000000000001', 'MUG-RED-350', 'Red stoneware mug', '350 ml stoneware mug with a glossy red glaze. Dishwasher safe.', 'mugs', 1299, 'USD'),
    ('5eed0000-0000-4000-8000-000000000002', 'MUG-BLUE-350', 'Blue stoneware mug', '350 ml stoneware mug with a speckled blue glaze. Dishwasher safe.', 'mugs', 1299, 'USD'),
    ('5eed0000-0000-4000-8000-000000000003', 'MUG-TRAVEL-450', 'Insulated travel mug', '450 ml double-walled steel mug that keeps tea hot for six hours.', 'mugs', 2499, 'USD'),
    ('5eed0000-0000-4000-8000-000000000004', 'MUG-ESPRESSO-2', 'Espresso cups, pair', 'Two 90 ml porcelain cups with saucers.', 'mugs', 1899, 'USD'),
    ('5eed0000-0000-4000-8000-000000000005', 'TEA-EARLGREY-100', 'Earl Grey loose leaf tea', '100 g of black tea scented with bergamot.', 'tea', 899, 'USD'),
    ('5eed0000-0000-4000-8000-000000000006', 'TEA-SENCHA-100', 'Japanese sencha', '100 g of steamed green tea from Shizuoka.', 'tea', 1199, 'USD'),
    ('5eed0000-0000-4000-8000-000000000007', 'TEA-CHAI-20', 'Masala chai tea bags', '20 bags of black tea with cardamom, ginger and cinnamon.', 'tea', 649, 'USD'),
    ('5eed0000-0000-4000-8000-000000000008', 'NB-A5-DOT', 'A5 dotted notebook', '192 pages of 100 gsm paper with a lay-flat binding.', 'stationery', 1599, 'USD'),
    ('5eed0000-0000-4000-8000-000000000009', 'NB-A6-POCKET', 'A6 pocket notebooks, 3-pack', 'Three 64-page ruled notebooks that fit a jacket pocket.', 'stationery', 999, 'USD'),
    ('5eed0000-0000-4000-8000-00000000000a', 'PEN-FOUNTAIN-F', 'Fountain pen, fine nib', 'Steel fine nib, with a converter and two ink cartridges.', 'stationery', 3499, 'USD');
INSERT INTO bv_events.outbox (id, source, type, subject, time, event)
SELECT e.id, '/catalog', e.type, e.subject, e.at,
       jsonb_build_object(
           'specversion', '1.0',
           'id', e.id,
           'source', '/catalog',
           'type', e.type,
           'subject', e.subject,
           'time', to_char(e.at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
           'datacontenttype', 'application/json',
           'data', e.data)
FROM (
    SELECT gen_random_uuid()::text AS id,
           'com.bitvelocity.product.created.v1' AS type,
           p.id::text AS subject,
           now() AS at,
           jsonb_build_object(
               'productId', p.id::text,
               'sku', p.sku,
               'name', p.name,
               'description', p.description,
               'category', p.category,
               'price', jsonb_build_object('amount', p.price_amount, 'currency', p.currency),
               'status', 'active') AS data,
           p.seq
    FROM product.products p
    WHERE p.id::text LIKE '5eed0000-0000-4000-8000-%'
) e
ORDER BY e.seq
"#;
