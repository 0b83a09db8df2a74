variable "project_id" {
  type        = string
  description = "Google Cloud project."
}

variable "region" {
  type        = string
  description = "Region of the (regional) cluster, e.g. europe-west4 (pick one that offers the GPU type)."
}

variable "cluster_name" {
  type        = string
  description = "Name of the GKE cluster."
  default     = "pefm"
}

variable "network" {
  type        = string
  description = "VPC network of the cluster."
  default     = "default"
}

variable "subnetwork" {
  type        = string
  description = "Subnetwork of the nodes (in region)."
  default     = "default"
}

variable "master_authorized_networks" {
  type = list(object({
    cidr_block   = string
    display_name = string
  }))
  description = "CIDRs allowed to reach the API server (the machine running Terraform must be in one)."
}

variable "managed_database_url" {
  type        = string
  description = "postgresql:// URL of a managed PostgreSQL (Cloud SQL); null runs TimescaleDB in the cluster."
  default     = null
  sensitive   = true
}

variable "domain" {
  type        = string
  description = "DNS domain of the Knative routes; null keeps Knative's default."
  default     = null
}
