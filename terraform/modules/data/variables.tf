variable "namespace" {
  type        = string
  description = "Namespace of PEFM's Knative Services (knative/base puts them in pefm); it gets the pefm-database and pefm-tokens Secrets."
  default     = "pefm"
}

variable "managed_database_url" {
  type        = string
  description = "postgresql:// URL of a managed PostgreSQL (RDS, Cloud SQL, Azure Database; TimescaleDB extension where offered). null runs TimescaleDB in the cluster from its Helm chart instead."
  default     = null
  sensitive   = true
}

variable "timescaledb_namespace" {
  type        = string
  description = "Namespace of the in-cluster TimescaleDB (unused with managed_database_url)."
  default     = "pefm-data"
}

variable "timescaledb_chart_version" {
  type        = string
  description = "Version of the timescaledb-single Helm chart."
  default     = "0.33.1"
}

variable "timescaledb_storage_size" {
  type        = string
  description = "Size of the in-cluster TimescaleDB data volume."
  default     = "20Gi"
}
