"""The demo's loopline.yaml: five sources, their contracts and cleansing, three stores."""

DEMO_CONFIG = """\
# loopline demo project (written by 'loopline demo'; edit and re-run 'loopline ingest --all').
project: loopline-demo

stores:
  metadata_url: sqlite:///.loopline/metadata.db
  warehouse_url: duckdb:///.loopline/warehouse.duckdb
  lake_url: .loopline/lake

sources:
  customers_csv: {type: file, path: data/customers.csv}        # ';'-delimited, latin-1: detected
  orders_json: {type: file, path: data/orders.ndjson.gz}        # gzip NDJSON, nested objects
  products_xml: {type: file, path: data/products.xml, xml: {record_path: catalog/product}}
  payments_db:
    type: sql
    url: sqlite:///data/shop.db
    table: payments
    cursor_column: paid_at                                      # incremental high-water mark
    chunk_size: 1000
  reviews_api:
    type: http
    url: ${LOOPLINE_DEMO_API:-http://127.0.0.1:8765}/reviews
    pagination: {type: page_number, page_param: page, size_param: per_page, page_size: 100}
    records_path: $.data[*]

contracts:
  customers:
    primary_key: [customer_id]
    columns:
      customer_id: {type: int64, nullable: false}
      name: {type: string, nullable: false, max_length: 80}
      email: {type: string, regex: "^[^@\\\\s]+@[^@\\\\s]+\\\\.[a-z]{2,}$"}
      signup_date: date
      monthly_spend: {type: float64, min: 0}
      plan: {type: string, allowed: [basic, plus, pro]}
  orders:
    columns:
      order_id: {type: int64, nullable: false, unique: true}
      customer_id: {type: int64, nullable: false}
      amount: {type: float64, min: 0}
      currency: {type: string, allowed: [EUR, USD]}
      status: string
      created_at: datetime
    rules:
      - {check: allowed, column: status, values: [paid, shipped, refunded], severity: warn}
      - {check: freshness, column: created_at, max_age: 3650d, severity: fatal}
  products:
    columns:
      sku: {type: string, nullable: false, regex: "^P[0-9]{4}$"}
      price: {type: float64, min: 0}
      weight_lb: float64
  payments:
    columns:
      payment_id: {type: int64, nullable: false}
      amount: {type: float64}
      method: {type: string, nullable: false}
    rules:
      - {check: expression, name: no_negative_payments, expr: "amount >= 0"}
  reviews:
    columns:
      review_id: {type: int64, nullable: false}
      rating: {type: int64, min: 1, max: 5}
      created_at: datetime

ingest:
  customers:
    source: customers_csv
    contract: customers
    cleanse:
      - {step: trim}
      - {step: case, columns: [plan, email], to: lower}
      - {step: dedupe, key: [customer_id]}
    destination: {table: customers, mode: merge, key: [customer_id]}
  orders:
    source: orders_json
    contract: orders
    cleanse:
      - {step: case, columns: [currency], to: upper}
      - {step: outliers, columns: [amount], method: iqr, threshold: 6, action: quarantine}
    destination: {table: orders}
  products:
    source: products_xml
    contract: products
    cleanse:
      - {step: rename, mapping: {"@sku": sku}}              # XML attributes arrive as @name
      - {step: convert_units, column: weight_lb, from: lb, to: kg, into: weight_kg}
    destination: {kind: lake, table: products, mode: replace, partition_by: [category]}
  payments:
    source: payments_db
    contract: payments
    destination: {table: payments}
  reviews:
    source: reviews_api
    contract: reviews
    cleanse:
      - {step: null_tokens}
    destination: {table: reviews, mode: merge, key: [review_id]}
"""
