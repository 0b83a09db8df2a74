variable "subscription_id" {
  type        = string
  description = "Azure subscription."
}

variable "location" {
  type        = string
  description = "Azure region, e.g. westeurope (pick one that offers the GPU VM size)."
}

variable "cluster_name" {
  type        = string
  description = "Name of the AKS cluster, its resource group and its virtual network."
  default     = "pefm"
}

variable "api_server_authorized_ip_ranges" {
  type        = list(string)
  description = "CIDRs allowed to reach the API server (the machine running Terraform must be in one)."
}

variable "admin_group_object_ids" {
  type        = list(string)
  description = "Entra ID groups given cluster-admin besides the identity running Terraform."
  default     = []
}

variable "managed_database_url" {
  type        = string
  description = "postgresql:// URL of a managed PostgreSQL (Azure Database for PostgreSQL); null runs TimescaleDB in the cluster."
  default     = null
  sensitive   = true
}

variable "domain" {
  type        = string
  description = "DNS domain of the Knative routes; null keeps Knative's default."
  default     = null
}
