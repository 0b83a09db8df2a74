variable "namespace" {
  type        = string
  description = "Namespace of PEFM's Knative Services (knative/base puts them in pefm); it gets the pefm-database, pefm-tokens and pefm-signing Secrets (and pefm-cache with deploy_cache, the image pull Secret when registry_username is set)."
  default     = "pefm"
}

variable "managed_database_url" {
  type        = string
  description = "postgresql:// URL of a managed PostgreSQL (RDS, Cloud SQL, Azure Database; TimescaleDB >= 2.13 preloaded where offered, plain tables otherwise) as the database's owner, the migrator: only the bootstrap Job uses it; the component roles' URLs are it with their user:password@ instead. Its user creates those roles if it has CREATEROLE; otherwise that is a one-time step (`pefm db roles --sql`, terraform/README.md). null runs PostgreSQL + TimescaleDB in the cluster under the CloudNativePG operator instead."
  default     = null
  sensitive   = true

  validation {
    condition     = var.managed_database_url == null || (can(regex("^postgres(ql)?://[^/?#]+", var.managed_database_url)) && !can(regex("[?&](user|password)=", var.managed_database_url)))
    error_message = "managed_database_url must be a postgresql:// (or postgres://) URL with the user and password before the host, not in its query: the role URLs replace them."
  }
}

variable "previous_verify_keys" {
  type        = list(string)
  description = "Public keys (PEM or base64 of the raw 32 bytes) the inference revisions, the monitor, the rollout API, the retrain CronJobs and CD's Jobs still accept besides the generated signing key's, in the pefm-signing Secret's public key: after the signing key is replaced, the old one's, until every model signed with it is retired or signed again (`pefm models sign`)."
  default     = []
}

variable "deploy_cache" {
  type        = bool
  description = "Whether the cluster runs the shared cache, knative/cache (`kubectl apply -k knative/cache`, a step of the deploy guide): true makes Secret pefm-cache (the Valkey password; the URL the inference revisions and ingest reach it at; the key the inference revisions tag its entries with). false makes none, and the functions cache in their own memory, without shared rate limits. Set false when knative/cache is not applied: given the Secret's URL, the functions use that cache and never fall back to their own memory, so with no server there they cache nothing and limit no rate."
  default     = true
}

variable "install_cnpg_operator" {
  type        = bool
  description = "Install the CloudNativePG operator (Helm) for the in-cluster database; false when the cluster already runs one (1.26 or later, watching all namespaces)."
  default     = true
}

variable "cnpg_chart_version" {
  type        = string
  description = "Version of the cloudnative-pg Helm chart (0.29.0 installs operator 1.30.0)."
  default     = "0.29.0"
}

variable "cnpg_namespace" {
  type        = string
  description = "Namespace of the CloudNativePG operator."
  default     = "cnpg-system"
}

variable "database_namespace" {
  type        = string
  description = "Namespace of the in-cluster PostgreSQL Cluster (unused with managed_database_url)."
  default     = "pefm-data"
}

variable "database_image" {
  type        = string
  description = "PostgreSQL image with TimescaleDB (>= 2.13) the CNPG Cluster runs; its PostgreSQL major must be postgres_major. The default is Timescale's own HA image (see main.tf for why)."
  default     = "timescale/timescaledb-ha:pg17.10-ts2.28.2"

  validation {
    condition     = can(regex(":pg[0-9]+", var.database_image)) || can(regex("@sha256:", var.database_image))
    error_message = "Pin the image by a pgNN... tag (timescaledb-ha style) or a digest."
  }
}

variable "postgres_major" {
  type        = number
  description = "PostgreSQL major version inside database_image: CNPG cannot read it from a timescaledb-ha tag, so the image is declared through an ImageCatalog with this major."
  default     = 17
}

variable "database_postgres_uid" {
  type        = number
  description = "UID (and GID) of the postgres user in database_image: 1000 in timescale/timescaledb-ha, 26 in CNPG's own images."
  default     = 1000
}

variable "database_instances" {
  type        = number
  description = "PostgreSQL instances (1 primary + standbys, streaming replication, automated failover). With 2 or more, CNPG's PodDisruptionBudgets let a node drain move one instance at a time; with 1, no PDB is created (it would block every drain)."
  default     = 2

  validation {
    condition     = var.database_instances >= 1
    error_message = "database_instances must be at least 1."
  }
}

variable "database_storage_size" {
  type        = string
  description = "Size of each instance's data volume (PVC); CNPG can grow it later if the storage class allows expansion."
  default     = "20Gi"
}

variable "storage_class" {
  type        = string
  description = "StorageClass of the database volumes; null uses the cluster's default class."
  default     = null
}

variable "database_backup" {
  type = object({
    destination_path            = string
    endpoint_url                = optional(string)
    retention_policy            = optional(string, "30d")
    schedule                    = optional(string, "0 0 3 * * *")
    credentials_secret          = optional(string)
    service_account_annotations = optional(map(string), {})
  })
  description = <<-EOT
    Continuous backup (base backups + WAL archive) of the in-cluster database to an object store with
    Barman Cloud; null turns backups off. destination_path: s3://bucket/path, gs://bucket/path or
    https://ACCOUNT.blob.core.windows.net/CONTAINER/path. Credentials: credentials_secret names a Secret in
    database_namespace (S3: keys ACCESS_KEY_ID and ACCESS_SECRET_KEY; GCS: APPLICATION_CREDENTIALS; Azure:
    AZURE_CONNECTION_STRING); without it the pods use the cloud's workload identity, which
    service_account_annotations attaches to their ServiceAccount (e.g. eks.amazonaws.com/role-arn,
    iam.gke.io/gcp-service-account, azure.workload.identity/client-id). schedule has six fields (seconds first).
  EOT
  default     = null

  validation {
    condition     = var.database_backup == null || can(regex("^(s3|gs|https)://", var.database_backup.destination_path))
    error_message = "database_backup.destination_path must start with s3://, gs:// or https:// (Azure Blob Storage)."
  }
}

variable "registry_server" {
  type        = string
  description = "Registry of PEFM's images, for the image pull Secret."
  default     = "ghcr.io"
}

variable "registry_username" {
  type        = string
  description = "User (or organization) that owns the private ghcr.io packages; with registry_token it makes the image pull Secret. null creates none (public packages need none)."
  default     = null
}

variable "registry_token" {
  type        = string
  description = "Token with read:packages for registry_username (a classic personal access token or a fine-grained one)."
  default     = null
  sensitive   = true
}

variable "image_pull_secret_name" {
  type        = string
  description = "Name of the image pull Secret created in namespace when registry_username is set."
  default     = "pefm-registry"
}

variable "mlflow_backend_store_uri" {
  type        = string
  description = "With managed_database_url: postgresql:// URL of MLflow's backend store (a database of its own, e.g. mlflow owned by a role pefm_mlflow, made once by the server's administrator), put into Secret pefm-mlflow for knative/tracking. null: no such Secret (MLflow is not deployed). In the cluster the module makes the role, the database and the Secret itself."
  default     = null
  sensitive   = true
}
