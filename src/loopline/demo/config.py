"""The demo's loopline.yaml: five sources, their contracts and cleansing, three stores, and
two training jobs on packaged public datasets (Telco churn, Ames housing)."""

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
  readings:                                # the stream pipeline's sensor readings
    columns:
      temperature: {type: float64, min: -40, max: 125}
      humidity: {type: float64, min: 0, max: 100}
      vibration: {type: float64, min: 0}
      battery: {type: float64, min: 0, max: 100}
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

# Training jobs ('loopline train churn', 'loopline train housing'). Their tables are
# public datasets that 'loopline demo' loads into the warehouse (loopline.datasets).
# The search budgets below are DEMO BUDGETS, small so the demo runs in about a minute on
# two cores: a few random trials, 2 inner folds, LightGBM with 150-200 trees. A real job
# would keep the defaults (Optuna, 30 trials, 3 inner folds, up to 1,500 trees).
train:
  churn:
    table: telco_churn                     # IBM Telco customer churn, 7,043 customers
    target: churn
    drop: [rownames]                       # the row id (the data holds no customer id)
    candidates:
      - {name: logistic}                   # searches C
      - name: lightgbm
        params: {n_estimators: 150}        # demo budget
        search_space:
          learning_rate: {float: [0.02, 0.1], log: true}
          num_leaves: {int: [8, 32], log: true}
          min_child_samples: {int: [10, 80], log: true}
    search: {method: random, n_trials: 4, inner_folds: 2}   # demo budget
    validation:
      cv: stratified
      folds: 5
      threshold: {strategy: max_f1}
    register_as: churn
  housing:
    table: ames                            # Ames house sales, 2,930 houses
    target: Sale_Price
    drop: [rownames]
    candidates:
      - {name: ridge}                      # searches alpha
      - name: lightgbm
        params: {n_estimators: 200}        # demo budget
        search_space:
          learning_rate: {float: [0.03, 0.1], log: true}
          num_leaves: {int: [8, 32], log: true}
    search: {method: random, n_trials: 4, inner_folds: 2}   # demo budget
    validation: {cv: kfold, folds: 5}
    register_as: housing

# 'loopline recommender train movies': implicit-feedback ALS + co-visitation on MovieLens
# (100,004 ratings), each user's latest 20% held out, popularity beside it in the same run.
recommenders:
  movies:
    table: movielens
    user: userId
    item: movieId
    time: timestamp
    rating: rating
    factors: 32                            # demo budget (default 64)
    iterations: 10                         # demo budget (default 15)
    register_as: movies

# 'loopline serve': the churn model and the movies recommender on http://127.0.0.1:8000.
serve:
  models:
    - name: churn                          # follows the champion alias (hot swap on promote)
  recommender:
    model: movies
    state_url: ${LOOPLINE_DEMO_REDIS:-}    # empty: in-process state; redis://... to share it
  auth:
    keys:                                  # 'loopline api-key NAME' makes a key and its digest
      - name: demo                         # the key is loopline-demo-key-not-a-secret
        sha256: 533021dab46f77093dbc7f20250da616097219007c8068d45bae306672fccaa5
        rate_limit: 2000
  request_log: {sample_rate: 1.0}
  experiments:
    ranking:                               # 'loopline ab report ranking'
      variants:
        - {name: popular, strategy: popular}   # control
        - {name: blend, strategy: blend}
      outcome: click

streams:
  sensors:                                 # 'loopline stream run sensors'; the demo runs ~20 s
    transport:
      kind: mqtt
      url: ${LOOPLINE_DEMO_MQTT:-mqtt://127.0.0.1:1883}
      topics: ["loopline-demo/sensors/+/+"]
      client_id: loopline-demo-sensors     # fixed id: a persistent session
    metrics: [temperature, humidity, vibration]
    contract: readings
    windows:
      - {kind: tumbling, size: 10s}
      - {kind: sliding, size: 30s, slide: 10s, aggregates: [count, mean, p95]}
    watermark: {delay: 2s, allowed_lateness: 15s, late_policy: update}
    detectors:
      - {kind: zscore, threshold: 4.0}
      - {kind: ewma, threshold: 4.0}
      - {kind: fixed, low: 12, high: 32, metrics: [temperature], warmup: 0}   # baseline
    alerts: {cooldown: 30s}
    sink: {max_rows: 2000, max_delay: 250ms}
"""
