//! The inventory tables, in the Postgres schema `inventory`.
//!
//! Both inventory components apply these migrations before touching the
//! tables (the projector includes this file with `#[path]`), so whichever
//! runs first creates them and the two always agree on their shape.
//!
//! The CHECK constraints are the last line of defence for the stock
//! invariants: whatever a handler gets wrong, a row can never hold
//! negative stock or more reserved than on hand.

use bv_service::Migration;

/// The name the migrations are recorded under in `bv_migrations`.
pub const COMPONENT: &str = "inventory";

/// In order; never edit one that has shipped, add the next.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        name: "0001_stock_and_reservations",
        sql: STOCK_AND_RESERVATIONS,
    },
    Migration {
        name: "0002_demo_stock",
        sql: DEMO_STOCK,
    },
    Migration {
        name: "0003_flash_sales",
        sql: FLASH_SALES,
    },
];

/// Flash sales: units of one product offered for a while (`flash`).
const FLASH_SALES: &str = "CREATE TABLE inventory.flash_sales (
    sale_id    text PRIMARY KEY DEFAULT gen_random_uuid()::text,
    product_id text NOT NULL REFERENCES inventory.stock (product_id),
    units      bigint NOT NULL,
    starts_at  timestamptz NOT NULL,
    ends_at    timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT flash_sale_units_positive CHECK (units > 0),
    CONSTRAINT flash_sale_ends_after_it_starts CHECK (ends_at > starts_at)
);
";

/// Stock per product and reservations of an order's lines.
const STOCK_AND_RESERVATIONS: &str = "CREATE SCHEMA IF NOT EXISTS inventory;
CREATE TABLE inventory.stock (
    product_id text PRIMARY KEY,
    sku        text NOT NULL,
    on_hand    bigint NOT NULL DEFAULT 0,
    reserved   bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT stock_on_hand_not_negative CHECK (on_hand >= 0),
    CONSTRAINT stock_reserved_not_negative CHECK (reserved >= 0),
    CONSTRAINT stock_reserved_within_on_hand CHECK (reserved <= on_hand)
);
CREATE TABLE inventory.reservations (
    reservation_id text PRIMARY KEY,
    order_id       text NOT NULL,
    status         text NOT NULL DEFAULT 'RESERVED'
                   CHECK (status IN ('RESERVED', 'RELEASED', 'COMMITTED')),
    expires_at     timestamptz NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE inventory.reservation_items (
    reservation_id text NOT NULL REFERENCES inventory.reservations ON DELETE CASCADE,
    product_id     text NOT NULL REFERENCES inventory.stock,
    quantity       bigint NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (reservation_id, product_id)
);
";

/// Stock for the catalogue's demo products (the product component's
/// migration `0002_demo_catalog`: fixed ids, the same everywhere), so that
/// a fresh platform can take an order at once: 25 units of each arrive,
/// exactly as a restock would bring them, with their `stock.restocked`
/// events in the outbox.
///
/// The records do not wait for the products' `product.created`: whichever
/// comes first, the projector's upsert keeps the counts and this one adds
/// to them, so on a database where the projector opened the records
/// (empty) before this migration existed, the demo products get their 25
/// units all the same. The events are built in SQL, like the catalogue's
/// demo events; the integration tests check them.
const DEMO_STOCK: &str = r#"
WITH arrival (quantity) AS (VALUES (25::bigint)),
arrived AS (
    INSERT INTO inventory.stock AS s (product_id, sku, on_hand)
    SELECT v.product_id, v.sku, arrival.quantity
    FROM arrival, (VALUES
        ('5eed0000-0000-4000-8000-000000000001', 'MUG-RED-350'),
        ('5eed0000-0000-4000-8000-000000000002', 'MUG-BLUE-350'),
        ('5eed0000-0000-4000-8000-000000000003', 'MUG-TRAVEL-450'),
        ('5eed0000-0000-4000-8000-000000000004', 'MUG-ESPRESSO-2'),
        ('5eed0000-0000-4000-8000-000000000005', 'TEA-EARLGREY-100'),
        ('5eed0000-0000-4000-8000-000000000006', 'TEA-SENCHA-100'),
        ('5eed0000-0000-4000-8000-000000000007', 'TEA-CHAI-20'),
        ('5eed0000-0000-4000-8000-000000000008', 'NB-A5-DOT'),
        ('5eed0000-0000-4000-8000-000000000009', 'NB-A6-POCKET'),
        ('5eed0000-0000-4000-8000-00000000000a', 'PEN-FOUNTAIN-F')
    ) AS v (product_id, sku)
    ON CONFLICT (product_id) DO UPDATE
        SET on_hand = s.on_hand + EXCLUDED.on_hand, updated_at = now()
    RETURNING s.product_id, s.sku, s.on_hand
)
INSERT INTO bv_events.outbox (id, source, type, subject, time, event)
SELECT e.id, '/inventory', e.type, e.subject, e.at,
       jsonb_build_object(
           'specversion', '1.0',
           'id', e.id,
           'source', '/inventory',
           'type', e.type,
           'subject', e.subject,
           'time', to_char(e.at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
           'datacontenttype', 'application/json',
           'data', e.data)
FROM (
    SELECT gen_random_uuid()::text AS id,
           'com.bitvelocity.stock.restocked.v1' AS type,
           a.product_id AS subject,
           now() AS at,
           jsonb_build_object(
               'productId', a.product_id,
               'sku', a.sku,
               'warehouseId', 'main',
               'quantity', arrival.quantity,
               'onHand', a.on_hand) AS data
    FROM arrived a, arrival
) e
ORDER BY e.subject
"#;
