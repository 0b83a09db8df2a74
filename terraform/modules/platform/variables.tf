variable "platform" {
  type        = string
  description = "The cluster module's platform output (eks, gke, aks or existing)."
}

variable "gpu_node_selector" {
  type        = map(string)
  description = "The cluster module's gpu_node_selector: labels of the GPU nodes."
}

variable "gpu_node_taint" {
  type = object({
    key    = string
    value  = string
    effect = string
  })
  description = "The cluster module's gpu_node_taint: the taint GPU pods must tolerate."
}

variable "nvidia_runtime_handler" {
  type        = string
  description = "containerd handler behind the `nvidia` RuntimeClass of the GPU overlay; null picks the platform's (see modules/knative: eks nvidia, aks nvidia-container-runtime, gke runc, existing nvidia)."
  default     = null
}

variable "install_nvidia_device_plugin" {
  type        = bool
  description = "Install NVIDIA's device plugin (Helm); null installs it on eks and aks only (GKE runs its own; on an existing cluster NVIDIA's GPU operator usually does)."
  default     = null
}

variable "domain" {
  type        = string
  description = "DNS domain the Knative routes are served under (config-domain); null keeps Knative's default."
  default     = null
}

variable "managed_database_url" {
  type        = string
  description = "A managed PostgreSQL URL (as the database's owner, the migrator) to use instead of the in-cluster database; null runs PostgreSQL + TimescaleDB under the CloudNativePG operator. See modules/data for the component roles."
  default     = null
  sensitive   = true
}

variable "mlflow_backend_store_uri" {
  type        = string
  description = "With managed_database_url: MLflow's backend store URL (see modules/data); null with the in-cluster database, which makes its own."
  default     = null
  sensitive   = true
}

variable "storage_class" {
  type        = string
  description = "StorageClass of the database and Prometheus volumes; null uses the cluster's default class. Pass it as a value (e.g. the name of a StorageClass resource the example creates) rather than depends_on, which would defer the modules' data sources to apply time."
  default     = null
}

variable "database_instances" {
  type        = number
  description = "Instances of the in-cluster PostgreSQL (CNPG): 2 or more for failover and PodDisruptionBudgets."
  default     = 2
}

variable "database_storage_size" {
  type        = string
  description = "Data volume size of each in-cluster PostgreSQL instance."
  default     = "20Gi"
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
  description = "Barman Cloud backups of the in-cluster database to an object store (see modules/data); null: none."
  default     = null
}

variable "registry_username" {
  type        = string
  description = "Owner of private ghcr.io packages: with registry_token, the data module creates an image pull Secret in namespace pefm. null: public packages, no Secret."
  default     = null
}

variable "registry_token" {
  type        = string
  description = "Token with read:packages for registry_username."
  default     = null
  sensitive   = true
}

variable "previous_verify_keys" {
  type        = list(string)
  description = "Public keys still accepted for model artifacts besides the generated signing key's, while a replaced key's models are retired (see modules/data)."
  default     = []
}

variable "deploy_cache" {
  type        = bool
  description = "Whether the cluster runs knative/cache (`kubectl apply -k knative/cache`): true makes Secret pefm-cache; false makes none, so the functions cache in their own memory (see modules/data)."
  default     = true
}
