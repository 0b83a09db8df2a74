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
  description = "postgresql:// URL of a managed PostgreSQL (any PostgreSQL, TimescaleDB where possible); null runs PostgreSQL + TimescaleDB in the cluster (CloudNativePG)."
  default     = null
  sensitive   = true
}

variable "domain" {
  type        = string
  description = "DNS domain of the Knative routes; null keeps Knative's default."
  default     = null
}

variable "registry_username" {
  type        = string
  description = "Owner of PEFM's private ghcr.io packages; with registry_token an image pull Secret is created in namespace pefm. null: the packages are public."
  default     = null
}

variable "registry_token" {
  type        = string
  description = "Token with read:packages for registry_username (set it with TF_VAR_registry_token, not in a file)."
  default     = null
  sensitive   = true
}
