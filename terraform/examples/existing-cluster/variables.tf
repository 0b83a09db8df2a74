variable "kubeconfig_path" {
  type        = string
  description = "Path of the kubeconfig that reaches the cluster."
  default     = "~/.kube/config"
}

variable "kubeconfig_context" {
  type        = string
  description = "Context to use; null uses the kubeconfig's current-context."
  default     = null
}

variable "managed_database_url" {
  type        = string
  description = "postgresql:// URL of a managed PostgreSQL (any PostgreSQL, TimescaleDB where possible); null runs TimescaleDB in the cluster."
  default     = null
  sensitive   = true
}

variable "domain" {
  type        = string
  description = "DNS domain of the Knative routes; null keeps Knative's default."
  default     = null
}
